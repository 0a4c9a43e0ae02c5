# Why this file exists: Debian's arm64 simdjson runtime without its -dev package (see ../toolchain.cmake):
# the same target name, simdjson::simdjson, as the real package gives.
if(NOT TARGET simdjson::simdjson)
  add_library(simdjson::simdjson SHARED IMPORTED)
  set_target_properties(simdjson::simdjson PROPERTIES
    IMPORTED_LOCATION /usr/lib/aarch64-linux-gnu/libsimdjson.so.14
    IMPORTED_SONAME libsimdjson.so.14)
endif()
set(simdjson_FOUND TRUE)
