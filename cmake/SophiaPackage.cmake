# Debian packages: `cpack -G DEB` in a build directory makes
#
#   sophia_VERSION_ARCH.deb      sophiad, the bundled plugins, the dashboard,
#                                /etc/sophia/sophia.yaml and /etc/default/sophia
#                                (conffiles), sophiad.service, the man pages
#   sophia-sdk_VERSION_ARCH.deb  sdk.h, sophia-sdk.pc, the SophiaSDK CMake
#                                package and sophia-plugin-test
#
# both under /usr (configuration under /etc, state under /var/lib/sophia:
# cmake/SophiaInstall.cmake). Library dependencies come from
# dpkg-shlibdeps (dpkg-dev); the maintainer scripts are packaging/debian/.
# scripts/package-test builds, installs, runs and removes them.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sophia)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Sophia")
set(CPACK_PACKAGE_CONTACT "Sophia maintainers <sophia@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "real-time host daemon for events, cache and dashboards")

# DESTDIR staging with the real prefix: the install code writes /etc and
# /var paths computed from CMAKE_INSTALL_PREFIX, which must be /usr then.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL sophia sdk)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

set(CPACK_DEBIAN_SOPHIA_PACKAGE_NAME sophia)
set(CPACK_COMPONENT_SOPHIA_DESCRIPTION
  "real-time host daemon for events, cache and dashboards
sophiad receives events over HTTP, webhooks, Redis streams and StatsD,
runs them through processor plugins, serves a three-tier cache (memory,
Redis, PostgreSQL) and contextual memory, and pushes results to
dashboards over WebSockets. It runs as sophiad.service, which is not
started on install: set the Redis and PostgreSQL URLs in
/etc/default/sophia, then systemctl enable --now sophiad.")
set(CPACK_DEBIAN_SOPHIA_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles
  ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
  ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
  ${PROJECT_SOURCE_DIR}/packaging/debian/postrm)

set(CPACK_DEBIAN_SDK_PACKAGE_NAME sophia-sdk)
set(CPACK_DEBIAN_SDK_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_SDK_DESCRIPTION
  "plugin SDK for the Sophia daemon
The header, pkg-config file (sophia-sdk) and CMake package (SophiaSDK)
for building Sophia plugins, and sophia-plugin-test, which runs a
processor plugin through sophiad's own loader without a daemon.")
# sophia-plugin-test and SophiaSDK_PLUGIN_DIR are for this very sophiad.
set(CPACK_COMPONENT_SDK_DEPENDS sophia)

include(CPack)
