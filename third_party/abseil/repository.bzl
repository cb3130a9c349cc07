"""@com_google_absl from Debian's libabsl-dev."""

load("//third_party:system_library.bzl", "system_library")

def abseil_repository():
    system_library(
        name = "com_google_absl",
        build_file = "//third_party/abseil:BUILD.abseil",
        debian_package = "libabsl-dev",
        required_paths = ["/usr/include/absl/status/status.h"],
        linked_paths = [],
    )
