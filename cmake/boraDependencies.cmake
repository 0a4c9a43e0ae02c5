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

# Looks `package` up as a CMake package, then as pkg-config module `pc_module`, until `target` exists;
# appends `description` to BORA_MISSING_DEPENDENCIES when neither way finds it.
macro(_bora_find_dependency target package pc_module description)
  if(NOT TARGET ${target})
    find_package(${package} CONFIG QUIET)
  endif()
  if(NOT TARGET ${target})
    find_package(PkgConfig QUIET)
    if(PKG_CONFIG_FOUND)
      pkg_check_modules(BORA_PC_${package} QUIET IMPORTED_TARGET GLOBAL ${pc_module})
    endif()
    if(TARGET PkgConfig::BORA_PC_${package})
      _bora_alias_pkgconfig_target(${target} PkgConfig::BORA_PC_${package})
    else()
      list(APPEND BORA_MISSING_DEPENDENCIES "${description}")
    endif()
  endif()
endmacro()

# Highway: Debian installs hwy-config.cmake (target hwy::hwy) and libhwy.pc.
_bora_find_dependency(hwy::hwy hwy libhwy "Highway (CMake package 'hwy' or pkg-config 'libhwy')")

# simdjson: Debian installs simdjson-config.cmake (target simdjson::simdjson) and simdjson.pc.
_bora_find_dependency(simdjson::simdjson simdjson simdjson "simdjson (CMake package 'simdjson' or pkg-config 'simdjson')")
