# Why this file exists: bora's two link dependencies, Highway and simdjson, are found the same way when
# bora itself is built and when an installed bora is consumed (boraConfig.cmake includes this file).
# Each is looked up as a CMake package first and through pkg-config second, because distributions ship
# one or the other (Debian 12 ships both). Either way the result is the same target name, hwy::hwy and
# simdjson::simdjson, so the exported bora::bora target links the same names on every machine.
#
# Output: BORA_MISSING_DEPENDENCIES, a list of the packages found neither way (empty on success).

set(BORA_MISSING_DEPENDENCIES "")

# Wraps a pkg-config result in the CMake package's usual target name.
function(_bora_alias_pkgconfig_target wanted_target pkgconfig_target)
  if(NOT TARGET ${wanted_target})
    add_library(${wanted_target} INTERFACE IMPORTED GLOBAL)
    set_property(TARGET ${wanted_target} PROPERTY INTERFACE_LINK_LIBRARIES ${pkgconfig_target})
  endif()
endfunction()

# Highway: Debian installs hwy-config.cmake (target hwy::hwy) and libhwy.pc.
if(NOT TARGET hwy::hwy)
  find_package(hwy CONFIG QUIET)
endif()
if(NOT TARGET hwy::hwy)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(BORA_PC_HWY QUIET IMPORTED_TARGET GLOBAL libhwy)
  endif()
  if(TARGET PkgConfig::BORA_PC_HWY)
    _bora_alias_pkgconfig_target(hwy::hwy PkgConfig::BORA_PC_HWY)
  else()
    list(APPEND BORA_MISSING_DEPENDENCIES "Highway (CMake package 'hwy' or pkg-config 'libhwy')")
  endif()
endif()

# simdjson: Debian installs simdjson-config.cmake (target simdjson::simdjson) and simdjson.pc.
if(NOT TARGET simdjson::simdjson)
  find_package(simdjson CONFIG QUIET)
endif()
if(NOT TARGET simdjson::simdjson)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(BORA_PC_SIMDJSON QUIET IMPORTED_TARGET GLOBAL simdjson)
  endif()
  if(TARGET PkgConfig::BORA_PC_SIMDJSON)
    _bora_alias_pkgconfig_target(simdjson::simdjson PkgConfig::BORA_PC_SIMDJSON)
  else()
    list(APPEND BORA_MISSING_DEPENDENCIES "simdjson (CMake package 'simdjson' or pkg-config 'simdjson')")
  endif()
endif()
