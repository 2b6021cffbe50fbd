# What `cmake --install` puts under the prefix besides the targets (sophiad
# and the plugins install themselves; the SDK is sdk/CMakeLists.txt):
#
#   share/sophia/          the dashboard files (sophiad looks in
#                          <bindir>/../share/sophia)
#   etc/sophia/sophia.yaml config/sophia.yaml with plugins.path pointing at
#                          the installed plugins
#
# The configuration is rewritten at install time, not configure time, so
# it is always the current config/sophia.yaml. An existing sophia.yaml is
# an operator's: it is kept, and the new default lands beside it as
# sophia.yaml.default.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/share/
  DESTINATION ${SOPHIA_SHARE_INSTALL_DIR})

set(SOPHIA_CONFIG_INSTALL_DIR ${CMAKE_INSTALL_SYSCONFDIR}/sophia)
# plugins.path is resolved against the file's directory: make it relative
# when both directories are relative to the prefix, so the tree relocates.
if(IS_ABSOLUTE "${SOPHIA_CONFIG_INSTALL_DIR}" OR IS_ABSOLUTE "${SOPHIA_PLUGIN_INSTALL_DIR}")
  set(SOPHIA_CONFIG_PLUGIN_PATH ${CMAKE_INSTALL_FULL_LIBDIR}/sophia/plugins)
else()
  file(RELATIVE_PATH SOPHIA_CONFIG_PLUGIN_PATH
    /prefix/${SOPHIA_CONFIG_INSTALL_DIR} /prefix/${SOPHIA_PLUGIN_INSTALL_DIR})
endif()

install(CODE "
  set(_src \"${PROJECT_SOURCE_DIR}/config/sophia.yaml\")
  set(_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${SOPHIA_CONFIG_INSTALL_DIR}\")
  if(IS_ABSOLUTE \"${SOPHIA_CONFIG_INSTALL_DIR}\")
    set(_dir \"\$ENV{DESTDIR}${SOPHIA_CONFIG_INSTALL_DIR}\")
  endif()
  file(READ \"\${_src}\" _yaml)
  string(REGEX REPLACE \"\\n( +)- \\\\.\\\\./build/plugins *\\n\"
    \"\\n\\\\1- ${SOPHIA_CONFIG_PLUGIN_PATH}   # installed plugins (relative to this file)\\n\"
    _new \"\${_yaml}\")
  if(_new STREQUAL _yaml)
    message(FATAL_ERROR \"config/sophia.yaml: no '- ../build/plugins' entry under plugins.path to point at the installed plugins\")
  endif()
  string(PREPEND _new \"# Installed copy of config/sophia.yaml: plugins.path below points at the\n# installed plugins (\${CMAKE_INSTALL_PREFIX}/${SOPHIA_PLUGIN_INSTALL_DIR}).\n\")
  set(_dst \"\${_dir}/sophia.yaml\")
  if(EXISTS \"\${_dst}\")
    set(_dst \"\${_dir}/sophia.yaml.default\")
  endif()
  message(STATUS \"Installing: \${_dst}\")
  file(MAKE_DIRECTORY \"\${_dir}\")
  file(WRITE \"\${_dst}\" \"\${_new}\")
")
