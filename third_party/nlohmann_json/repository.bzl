"""@nlohmann_json from Debian's nlohmann-json3-dev."""

load("//third_party:system_library.bzl", "system_library")

def nlohmann_json_repository():
    system_library(
        name = "nlohmann_json",
        build_file = "//third_party/nlohmann_json:BUILD.nlohmann_json",
        debian_package = "nlohmann-json3-dev",
        required_paths = ["/usr/include/nlohmann/json.hpp"],
        linked_paths = [],
    )
