"""Wraps a library that Debian installs under /usr as a Bazel repository."""

def _system_library_impl(repository_ctx):
    for path in repository_ctx.attr.required_paths:
        if not repository_ctx.path(path).exists:
            fail("%s is missing: install Debian's %s (tools/bazel does it)" % (path, repository_ctx.attr.debian_package))
    for path in repository_ctx.attr.linked_paths:
        repository_ctx.symlink(path, repository_ctx.path(path).basename)
    repository_ctx.symlink(repository_ctx.attr.build_file, "BUILD.bazel")
    repository_ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % repository_ctx.name)

system_library = repository_rule(
    implementation = _system_library_impl,
    attrs = {
        "build_file": attr.label(mandatory = True, allow_single_file = True),
        "debian_package": attr.string(mandatory = True),
        "linked_paths": attr.string_list(doc = "Files linked into the repository root, for data deps."),
        "required_paths": attr.string_list(doc = "Paths whose absence means the package is not installed."),
    },
    local = True,
)
