# Finds every library Sophia links, failing at configure time with the name
# of the Debian package that provides what is missing.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config")
endif()

# sophia_require_pkg(PREFIX pkg-config-module debian-package)
function(sophia_require_pkg prefix module debpkg)
  pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${prefix}_FOUND)
    message(FATAL_ERROR "${module} not found: apt-get install ${debpkg}")
  endif()
endfunction()

sophia_require_pkg(LIBEVENT "libevent>=2.1" libevent-dev)
sophia_require_pkg(LIBEVENT_PTHREADS libevent_pthreads libevent-dev)
# server.tls: TLS bufferevents (core/http/http_tls.c)
sophia_require_pkg(LIBEVENT_OPENSSL libevent_openssl libevent-dev)
sophia_require_pkg(HIREDIS hiredis libhiredis-dev)
sophia_require_pkg(LIBPQ libpq libpq-dev)
sophia_require_pkg(LWS "libwebsockets>=4.1" libwebsockets-dev)
sophia_require_pkg(LIBUV libuv libuv1-dev)
sophia_require_pkg(YAML yaml-0.1 libyaml-dev)
sophia_require_pkg(JANSSON jansson libjansson-dev)
sophia_require_pkg(LIBCRYPTO libcrypto libssl-dev)
sophia_require_pkg(LIBSSL libssl libssl-dev)
# sd_notify(3) for sophiad.service (Type=notify): core/lib/notify.h.
sophia_require_pkg(LIBSYSTEMD libsystemd libsystemd-dev)
# cache.compress: zstd frames for large values in L2/L3 (core/cache/cache_zstd.h).
sophia_require_pkg(ZSTD libzstd libzstd-dev)
# /ws subprotocol sophia.v1.msgpack (core/ws/ws_msgpack.h says why not CBOR).
sophia_require_pkg(MSGPACK msgpack libmsgpack-dev)
# websocket.compression: deflate, one shared stream (core/ws/ws_deflate.h).
sophia_require_pkg(ZLIB zlib zlib1g-dev)

# jemalloc as sophiad's malloc, as Redis does: the event path allocates
# small, short-lived blocks (parsed events, actions, messages) in bursts
# of a POST, and glibc's malloc/free were a quarter of sophiad's CPU at
# 5,000 events/s; jemalloc took 9.5 µs per event to where glibc took
# 11.1 (README, "Where the microseconds go"). Not with the sanitizers,
# which bring their own allocator.
option(SOPHIA_JEMALLOC "Link sophiad with jemalloc (libjemalloc-dev)" ON)
if(SOPHIA_JEMALLOC AND NOT SOPHIA_SANITIZE)
  sophia_require_pkg(JEMALLOC jemalloc libjemalloc-dev)
endif()

# libltdl ships no pkg-config file.
find_path(LTDL_INCLUDE_DIR ltdl.h)
find_library(LTDL_LIBRARY ltdl)
if(NOT LTDL_INCLUDE_DIR OR NOT LTDL_LIBRARY)
  message(FATAL_ERROR "libltdl not found: apt-get install libltdl-dev")
endif()
add_library(sophia::ltdl UNKNOWN IMPORTED GLOBAL)
set_target_properties(sophia::ltdl PROPERTIES
  IMPORTED_LOCATION ${LTDL_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${LTDL_INCLUDE_DIR})

# faiss: Debian ships libfaiss.a and the C API headers, not the compiled C
# API; core/memory/faiss_shim.cpp implements the functions we call. faiss's CMake
# package needs OpenMP found first.
find_package(OpenMP)
find_package(faiss QUIET)
if(NOT faiss_FOUND OR NOT OpenMP_CXX_FOUND)
  message(FATAL_ERROR "faiss not found: apt-get install libfaiss-dev libopenblas-dev (and a compiler with OpenMP)")
endif()
find_library(LAPACK_LIBRARY lapack)
find_library(BLAS_LIBRARY blas)
if(NOT LAPACK_LIBRARY OR NOT BLAS_LIBRARY)
  message(FATAL_ERROR "lapack/blas not found: apt-get install liblapack-dev libblas-dev")
endif()
