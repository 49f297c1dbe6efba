# Every third-party dependency is found through pkg-config. A missing one stops
# configure with the Debian package that provides it, so the fix is one command
# (or simply: sudo deploy/install-deps.sh).
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: install the Debian package 'pkg-config' (or run deploy/install-deps.sh)")
endif()

function(am2z_require target module debian_pkg)
  pkg_check_modules(${target} IMPORTED_TARGET ${module})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "${module} not found by pkg-config: install the Debian package '${debian_pkg}' (or run deploy/install-deps.sh)")
  endif()
endfunction()

am2z_require(ZMQ     libzmq    libzmq3-dev)
am2z_require(CZMQ    libczmq   libczmq-dev)
am2z_require(MSGPACK msgpack   libmsgpack-dev)
am2z_require(LMDB    lmdb      liblmdb-dev)
am2z_require(CRYPTO  libcrypto libssl-dev)
am2z_require(JANSSON jansson   libjansson-dev)
if(AM2Z_TESTS)
  am2z_require(CHECK check check)
endif()
