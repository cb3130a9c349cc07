"""@com_google_protobuf over Debian's protoc and libprotobuf."""

def _system_protobuf_impl(repository_ctx):
    protoc = repository_ctx.which("protoc")
    if protoc == None:
        fail("protoc not found: install Debian's protobuf-compiler (tools/bazel does it)")
    repository_ctx.file("protoc.sh", "#!/bin/sh\nexec %s \"$@\"\n" % protoc, executable = True)
    repository_ctx.symlink(Label("//third_party/protobuf:BUILD.protobuf"), "BUILD.bazel")
    repository_ctx.file("WORKSPACE", 'workspace(name = "com_google_protobuf")\n')

system_protobuf = repository_rule(
    implementation = _system_protobuf_impl,
    local = True,
)
