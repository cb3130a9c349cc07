"""Debian's rules_cc, patched to load on Bazel 4.2.3.

Debian ships rules_cc 0.0.4, whose rules load `use_cpp_toolchain` from
`@bazel_tools//tools/cpp:toolchain_utils.bzl`; Bazel 4.2.3 does not have it.
This rule mirrors the installed tree and rewrites those loads to the
equivalent toolchain type list.
"""

_RULES_CC_DIR = "/usr/share/bazel/rules/cc"

def _debian_rules_cc_impl(repository_ctx):
    source = repository_ctx.path(_RULES_CC_DIR)
    if not source.exists:
        fail("%s is missing: install Debian's bazel-rules-cc (tools/bazel does it)" % _RULES_CC_DIR)
    listing = repository_ctx.execute(["find", _RULES_CC_DIR, "-type", "f"])
    if listing.return_code != 0:
        fail("cannot list %s: %s" % (_RULES_CC_DIR, listing.stderr))
    for absolute in listing.stdout.splitlines():
        relative = absolute[len(_RULES_CC_DIR) + 1:]
        if relative in ("WORKSPACE", "MODULE.bazel"):
            continue
        if not absolute.endswith(".bzl"):
            repository_ctx.symlink(absolute, relative)
            continue
        content = repository_ctx.read(absolute)
        content = content.replace(
            'load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain", "use_cpp_toolchain")',
            'load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")',
        )
        content = content.replace(
            "use_cpp_toolchain()",
            '["@bazel_tools//tools/cpp:toolchain_type"]',
        )
        repository_ctx.file(relative, content, executable = False)
    repository_ctx.file("WORKSPACE", 'workspace(name = "rules_cc")\n')

debian_rules_cc = repository_rule(
    implementation = _debian_rules_cc_impl,
    local = True,
)
