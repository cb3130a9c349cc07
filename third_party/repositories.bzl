"""Every external repository of the workspace, all over Debian's packages.

Nothing here downloads: each dependency is wired in its own directory under
third_party/, from what `tools/bazel` installs with apt-get.
"""

load("//third_party/abseil:repository.bzl", "abseil_repository")
load("//third_party/coverage_tools:repository.bzl", "coverage_tools_repository")
load("//third_party/fashion_mnist:repository.bzl", "fashion_mnist_repository")
load("//third_party/googletest:repository.bzl", "googletest_repository")
load("//third_party/libtorch:repository.bzl", "libtorch_repository")
load("//third_party/nlohmann_json:repository.bzl", "nlohmann_json_repository")
load("//third_party/protobuf:repository.bzl", "system_protobuf")
load("//third_party/rules_cc:repository.bzl", "debian_rules_cc")
load("//third_party/stb:repository.bzl", "stb_repository")
load("//third_party/xxhash:repository.bzl", "xxhash_repository")
load("//third_party/zlib:repository.bzl", "zlib_repository")

def project_repositories():
    debian_rules_cc(name = "rules_cc")
    native.local_repository(name = "rules_java", path = "/usr/share/bazel/rules/java")
    native.local_repository(name = "rules_proto", path = "/usr/share/bazel/rules/proto")
    native.local_repository(name = "platforms", path = "/usr/share/bazel/tools/platforms")
    native.local_repository(name = "bazel_skylib", path = "/usr/share/bazel/tools/skylib")
    coverage_tools_repository(name = "remote_coverage_tools")
    system_protobuf(name = "com_google_protobuf")
    libtorch_repository(name = "libtorch")
    abseil_repository()
    googletest_repository()
    xxhash_repository()
    nlohmann_json_repository()
    zlib_repository()
    stb_repository()
    fashion_mnist_repository()
