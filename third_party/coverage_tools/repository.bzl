"""@remote_coverage_tools: an offline stand-in for Bazel's coverage tools."""

def _coverage_tools_impl(repository_ctx):
    repository_ctx.symlink(Label("//third_party/coverage_tools:BUILD.coverage_tools"), "BUILD.bazel")
    repository_ctx.symlink(Label("//third_party/coverage_tools:unsupported.sh"), "unsupported.sh")
    repository_ctx.file("WORKSPACE", 'workspace(name = "remote_coverage_tools")\n')

coverage_tools_repository = repository_rule(implementation = _coverage_tools_impl)
