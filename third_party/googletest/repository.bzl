"""@com_google_googletest from Debian's libgtest-dev."""

load("//third_party:system_library.bzl", "system_library")

def googletest_repository():
    system_library(
        name = "com_google_googletest",
        build_file = "//third_party/googletest:BUILD.googletest",
        debian_package = "libgtest-dev",
        required_paths = ["/usr/include/gtest/gtest.h"],
        linked_paths = [],
    )
