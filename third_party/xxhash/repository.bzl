"""@xxhash from Debian's libxxhash-dev."""

load("//third_party:system_library.bzl", "system_library")

def xxhash_repository():
    system_library(
        name = "xxhash",
        build_file = "//third_party/xxhash:BUILD.xxhash",
        debian_package = "libxxhash-dev",
        required_paths = ["/usr/include/xxhash.h"],
        linked_paths = [],
    )
