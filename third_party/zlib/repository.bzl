"""@zlib from Debian's zlib1g-dev."""

load("//third_party:system_library.bzl", "system_library")

def zlib_repository():
    system_library(
        name = "zlib",
        build_file = "//third_party/zlib:BUILD.zlib",
        debian_package = "zlib1g-dev",
        required_paths = ["/usr/include/zlib.h"],
        linked_paths = [],
    )
