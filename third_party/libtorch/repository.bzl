"""@libtorch: LibTorch's headers and shared libraries.

The default is Debian's CPU build (libtorch-dev: headers under /usr/include,
libraries in /usr/lib/x86_64-linux-gnu). To use an official LibTorch
distribution, for example the CUDA build, point the build at its root:

    tools/bazel build --repo_env=LIBTORCH_HOME=/opt/libtorch //...

The C++ ABI (`_GLIBCXX_USE_CXX11_ABI`) our code is compiled with must match
the one LibTorch was built with, or linking fails with undefined `c10::Error`
symbols. It is read off libc10.so (symbols containing `__cxx11` mean ABI 1);
`--repo_env=LIBTORCH_CXX11_ABI=0|1` overrides the detection.
"""

_DEBIAN_INCLUDE = "/usr/include"
_DEBIAN_LIB = "/usr/lib/x86_64-linux-gnu"
_HEADER_DIRS = ["ATen", "c10", "caffe2", "torch"]

def _detect_cxx11_abi(repository_ctx, lib_dir):
    override = repository_ctx.os.environ.get("LIBTORCH_CXX11_ABI", "")
    if override in ("0", "1"):
        return override
    if override:
        fail("LIBTORCH_CXX11_ABI must be 0 or 1, got '%s'" % override)
    result = repository_ctx.execute([
        "sh",
        "-c",
        "nm -D --defined-only '%s/libc10.so' | grep -q __cxx11" % lib_dir,
    ])
    return "1" if result.return_code == 0 else "0"

def _libtorch_impl(repository_ctx):
    home = repository_ctx.os.environ.get("LIBTORCH_HOME", "")
    if home:
        include_dir = home + "/include"
        lib_dir = home + "/lib"
    else:
        include_dir = _DEBIAN_INCLUDE
        lib_dir = _DEBIAN_LIB
    if not repository_ctx.path(include_dir + "/torch/csrc/api/include/torch/torch.h").exists:
        fail("LibTorch headers not found under %s: install Debian's libtorch-dev or set --repo_env=LIBTORCH_HOME to a LibTorch distribution" % include_dir)
    if not repository_ctx.path(lib_dir + "/libtorch.so").exists:
        fail("libtorch.so not found in %s" % lib_dir)

    # Only LibTorch's own header trees are linked in, so that nothing else
    # under /usr/include leaks into our include path through this repository.
    for name in _HEADER_DIRS:
        if repository_ctx.path(include_dir + "/" + name).exists:
            repository_ctx.symlink(include_dir + "/" + name, "include/" + name)
    repository_ctx.symlink(include_dir + "/torch/csrc/api/include", "api_include")

    libraries = ["torch", "torch_cpu", "c10"]
    cuda_libraries = []
    for name in ["torch_cuda", "c10_cuda"]:
        if repository_ctx.path("%s/lib%s.so" % (lib_dir, name)).exists:
            cuda_libraries.append(name)
    has_cuda = len(cuda_libraries) > 0

    # --no-as-needed: libtorch_cuda registers its kernels in static
    # initializers; a binary that never names one of its symbols would
    # otherwise drop it and see no GPU.
    linkopts = ["-L" + lib_dir, "-Wl,-rpath," + lib_dir, "-Wl,--no-as-needed"]
    linkopts += ["-l" + name for name in libraries + cuda_libraries]
    linkopts += ["-Wl,--as-needed", "-lpthread"]

    abi = _detect_cxx11_abi(repository_ctx, lib_dir)
    defines = ["_GLIBCXX_USE_CXX11_ABI=" + abi]
    if has_cuda:
        defines.append("CHECKPOINT_WITH_CUDA=1")

    repository_ctx.template("BUILD.bazel", Label("//third_party/libtorch:BUILD.libtorch.tpl"), {
        "%{linkopts}": repr(linkopts),
        "%{defines}": repr(defines),
        "%{home}": home or "(Debian libtorch-dev)",
    })
    repository_ctx.file("WORKSPACE", 'workspace(name = "libtorch")\n')

libtorch_repository = repository_rule(
    implementation = _libtorch_impl,
    environ = ["LIBTORCH_HOME", "LIBTORCH_CXX11_ABI"],
    local = True,
)
