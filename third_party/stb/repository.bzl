"""@stb from Debian's libstb-dev."""

load("//third_party:system_library.bzl", "system_library")

def stb_repository():
    system_library(
        name = "stb",
        build_file = "//third_party/stb:BUILD.stb",
        debian_package = "libstb-dev",
        required_paths = ["/usr/include/stb/stb_image.h"],
        linked_paths = [],
    )
