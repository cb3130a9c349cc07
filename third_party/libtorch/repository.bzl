"""@libtorch: LibTorch's headers and shared libraries.

The default is Debian's CPU build (libtorch-dev: headers under /usr/include,
libraries in /usr/lib/x86_64-linux-gnu). To use an official LibTorch
distribution, for example the CUDA build, point the build at its root:

    tools/bazel build --repo_env=LIBTORCH_HOME=/opt/libtorch //...

A relative LIBTORCH_HOME is taken from the workspace root; `--config=torch2`
(.bazelrc) points it at the torch wheel tools/bazel installs under
third_party/torch2/site. Such a wheel's directory is also a Python package:
`@libtorch//:python` is then /usr/bin/python3 with that torch first on its
path, so that interop tests compare against the same version's Python. With
Debian's LibTorch it is /usr/bin/python3 itself (python3-torch).

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

def _define_value(header, name):
    """The value of `#define NAME value` in a header's text, or ''."""
    for line in header.splitlines():
        words = [word for word in line.replace("\t", " ").split(" ") if word]
        if len(words) >= 3 and words[0] == "#define" and words[1] == name:
            return words[2]
    return ""

def _wheel_nccl_version(repository_ctx, home):
    """The NCCL version a PyPI torch wheel pins (its METADATA), or ''."""
    if not home:
        return ""
    site = repository_ctx.path(home).dirname
    for entry in site.readdir():
        if not (entry.basename.startswith("torch-") and entry.basename.endswith(".dist-info")):
            continue
        metadata = entry.get_child("METADATA")
        if not metadata.exists:
            continue
        for line in repository_ctx.read(metadata).splitlines():
            if line.startswith("Requires-Dist: nvidia-nccl-") and "==" in line:
                return line.split("==")[1].split(";")[0].strip()
    return ""

def _libtorch_impl(repository_ctx):
    home = repository_ctx.os.environ.get("LIBTORCH_HOME", "")
    if home and not home.startswith("/"):
        workspace_root = repository_ctx.path(Label("@//:WORKSPACE")).dirname
        home = "%s/%s" % (workspace_root, home)
    if home:
        include_dir = home + "/include"
        lib_dir = home + "/lib"
    else:
        include_dir = _DEBIAN_INCLUDE
        lib_dir = _DEBIAN_LIB
    if home.endswith("third_party/torch2/site/torch") and not repository_ctx.path(home).exists:
        fail("LibTorch 2.11 is not installed in %s: run the build through tools/bazel, which installs it for --config=torch2" % home)
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
    #
    # -lstdc++ first: the PyPI wheel's libtorch_cpu.so and libtorch.so export
    # their own copies of std::filesystem, and a binary that loads LibTorch
    # ahead of the C++ runtime binds to them; std::filesystem::remove_all then
    # crashed (SIGSEGV) on an existing directory. Listing libstdc++ first puts
    # it ahead of LibTorch in the dynamic linker's search order.
    linkopts = ["-L" + lib_dir, "-Wl,-rpath," + lib_dir, "-Wl,--no-as-needed", "-lstdc++"]
    linkopts += ["-l" + name for name in libraries + cuda_libraries]
    linkopts += ["-Wl,--as-needed", "-lpthread"]

    abi = _detect_cxx11_abi(repository_ctx, lib_dir)
    defines = ["_GLIBCXX_USE_CXX11_ABI=" + abi]
    if has_cuda:
        defines.append("CHECKPOINT_WITH_CUDA=1")

    # The Python that matches this LibTorch (see the module docstring).
    python_path = ""
    site_dir = repository_ctx.path(home).dirname if home else None
    if site_dir and repository_ctx.path("%s/torch/__init__.py" % site_dir).exists:
        python_path = str(site_dir)
    # And the interop tests' pinned packages (third_party/python_interop),
    # which tools/bazel installs for both builds.
    interop_site = str(repository_ctx.path(
        Label("//third_party/python_interop:requirements.txt"),
    ).dirname) + "/site"
    # Under torch2, pytorch-lightning too (third_party/lightning; it needs
    # torch 2.x, so Debian's 1.13 build goes without).
    lightning_site = ""
    if python_path and home.endswith("third_party/torch2/site/torch"):
        lightning_site = str(repository_ctx.path(
            Label("//third_party/lightning:requirements.txt"),
        ).dirname) + "/site"
    python_path = ":".join([p for p in [python_path, interop_site, lightning_site] if p])
    repository_ctx.file("python", "\n".join([
        "#!/bin/sh",
        "# Python with the torch that matches @libtorch.",
        "PYTHONPATH='%s'${PYTHONPATH:+:$PYTHONPATH} " % python_path +
        'exec /usr/bin/python3 "$@"',
        "",
    ]), executable = True)

    # c10d's ProcessGroupGloo.hpp needs Gloo's headers, which neither
    # LibTorch ships: Debian's libgloo-dev provides them. Debian's LibTorch
    # links that Gloo (-lgloo). PyPI's wheel carries its own Gloo inside
    # libtorch_cpu.so, so that build links no second copy; what our code
    # takes from these headers is only what ProcessGroupGloo.hpp declares,
    # and its members that hold Gloo objects do so by pointer, so their
    # layout does not depend on the Gloo version (checked: our binaries
    # reference no gloo:: symbol, only c10d's).
    gloo_defines = []
    gloo_linkopts = []
    if repository_ctx.path("/usr/include/gloo/allreduce.h").exists:
        gloo_defines = ["USE_C10D_GLOO", "CKPT_WITH_GLOO=1"]
        if not home:
            gloo_linkopts = ["-lgloo"]

    # c10d's ProcessGroupNCCL for a CUDA LibTorch: its headers need CUDA's
    # and NCCL's (the CUDA toolkit's include directory), and the NCCL
    # headers must be the version LibTorch was built with, because
    # ProcessGroupNCCL::Options holds an ncclConfig_t by value and our code
    # allocates it. The wheel names its NCCL in its metadata
    # (Requires-Dist: nvidia-nccl-cu13==X.Y.Z); without a match, no NCCL.
    nccl_defines = []
    nccl_note = "no CUDA LibTorch"
    cuda_include = "/usr/local/cuda/include"
    if has_cuda:
        nccl_note = "no %s/nccl.h" % cuda_include
        if repository_ctx.path(cuda_include + "/nccl.h").exists:
            header = repository_ctx.read(cuda_include + "/nccl.h")
            version = ".".join([
                _define_value(header, "NCCL_" + part)
                for part in ["MAJOR", "MINOR", "PATCH"]
            ])
            wanted = _wheel_nccl_version(repository_ctx, home)
            if wanted == version:
                nccl_defines = ["USE_C10D_NCCL", "CKPT_WITH_NCCL=1"]
                repository_ctx.symlink(cuda_include, "cuda_include")
                nccl_note = "NCCL %s" % version
            else:
                nccl_note = "%s/nccl.h is NCCL %s, LibTorch wants %s" % (
                    cuda_include,
                    version,
                    wanted or "an unknown version",
                )

    repository_ctx.template("BUILD.bazel", Label("//third_party/libtorch:BUILD.libtorch.tpl"), {
        "%{gloo_defines}": repr(gloo_defines),
        "%{gloo_linkopts}": repr(gloo_linkopts),
        "%{nccl_defines}": repr(nccl_defines),
        "%{nccl_note}": nccl_note,
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
