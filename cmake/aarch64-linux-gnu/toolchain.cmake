# Why this file exists: the CMake preset aarch64 cross-builds bora on a Debian 12 x86-64 machine with
# Debian's own packages (tools/install-deps.sh aarch64): g++-aarch64-linux-gnu, Highway and simdjson for
# arm64 through multiarch (/usr/lib/aarch64-linux-gnu), and ctest runs the tests under qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# pkg-config must describe arm64 libraries, never the build machine's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")

# libsimdjson-dev:arm64 cannot be installed beside the amd64 one (which the native build needs), so
# the arm64 runtime library is linked through this folder's stand-in CMake package; the header is the
# architecture-independent one in /usr/include.
set(simdjson_DIR "${CMAKE_CURRENT_LIST_DIR}/simdjson" CACHE PATH "simdjson for arm64 (stand-in package)")

# qemu-user 7.2 hangs in a program's first thread when it is given the guest's libraries with -L;
# starting the guest's dynamic loader explicitly works. The CPU comes from QEMU_CPU (the test presets
# set it: max for SVE/SVE2, max,sve=off for NEON only).
set(CMAKE_CROSSCOMPILING_EMULATOR
    qemu-aarch64 /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1
    --library-path /usr/aarch64-linux-gnu/lib:/usr/lib/aarch64-linux-gnu)
