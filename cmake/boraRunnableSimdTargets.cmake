# Why this file exists: sanitizer and fuzzing builds only run the kernels of the SIMD targets this
# machine has, so compiling the others (AVX-512 on an AVX2 machine) there costs minutes of CI for
# nothing; the release and Clang builds still compile every target. Used by BORA_ONLY_RUNNABLE_SIMD_TARGETS.
function(bora_runnable_simd_targets settings_target)
  if(CMAKE_CROSSCOMPILING)
    message(STATUS "bora: cross-compiling, so every SIMD target is compiled (the emulator decides)")
    return()
  endif()
  try_run(_bora_run_result _bora_compile_result
          ${CMAKE_CURRENT_BINARY_DIR}/bora_runnable_simd_targets
          ${PROJECT_SOURCE_DIR}/cmake/print_supported_simd_targets.cpp
          CMAKE_FLAGS -DCMAKE_CXX_STANDARD=17
          LINK_LIBRARIES hwy::hwy
          COMPILE_OUTPUT_VARIABLE _bora_compile_output
          RUN_OUTPUT_VARIABLE _bora_supported)
  string(STRIP "${_bora_supported}" _bora_supported)
  if(NOT _bora_compile_result OR NOT _bora_run_result EQUAL 0 OR NOT _bora_supported MATCHES "^[0-9]+$")
    message(WARNING "bora: could not ask Highway which SIMD targets this machine runs; compiling all of them\n"
                    "${_bora_compile_output}")
    return()
  endif()
  # Never the emulated baselines (EMU128 is bit 61, SCALAR bit 62): one of them is the static target.
  math(EXPR _bora_disabled "(~${_bora_supported}) & 0x1FFFFFFFFFFFFFFF" OUTPUT_FORMAT HEXADECIMAL)
  message(STATUS "bora: SIMD targets this machine runs: ${_bora_supported}; not compiled: ${_bora_disabled}")
  target_compile_definitions(${settings_target} INTERFACE HWY_DISABLED_TARGETS=${_bora_disabled})
endfunction()
