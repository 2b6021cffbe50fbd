# What `cmake --install` puts under the prefix besides the targets (sophiad
# and the plugins install themselves; the SDK is sdk/CMakeLists.txt):
#
#   share/sophia/          the dashboard files (sophiad finds them relative
#                          to its own bindir: core/paths.h)
#   etc/sophia/sophia.yaml config/sophia.yaml, unchanged: it names no plugin
#                          directory, and sophiad finds the installed plugins
#                          relative to its bindir (core/paths.h)
#
# The configuration is copied at install time, so it is always the current
# config/sophia.yaml. An existing sophia.yaml is an operator's: it is kept,
# and the new default lands beside it as sophia.yaml.default.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/share/
  DESTINATION ${SOPHIA_SHARE_INSTALL_DIR})

set(SOPHIA_CONFIG_INSTALL_DIR ${CMAKE_INSTALL_SYSCONFDIR}/sophia)
install(CODE "
  set(_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${SOPHIA_CONFIG_INSTALL_DIR}\")
  if(IS_ABSOLUTE \"${SOPHIA_CONFIG_INSTALL_DIR}\")
    set(_dir \"\$ENV{DESTDIR}${SOPHIA_CONFIG_INSTALL_DIR}\")
  endif()
  set(_dst \"\${_dir}/sophia.yaml\")
  if(EXISTS \"\${_dst}\")
    set(_dst \"\${_dir}/sophia.yaml.default\")
  endif()
  message(STATUS \"Installing: \${_dst}\")
  file(MAKE_DIRECTORY \"\${_dir}\")
  file(COPY_FILE \"${PROJECT_SOURCE_DIR}/config/sophia.yaml\" \"\${_dst}\")
")
