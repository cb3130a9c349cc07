"""@fashion_mnist from Debian's dataset-fashion-mnist."""

load("//third_party:system_library.bzl", "system_library")

def fashion_mnist_repository():
    system_library(
        name = "fashion_mnist",
        build_file = "//third_party/fashion_mnist:BUILD.fashion_mnist",
        debian_package = "dataset-fashion-mnist",
        required_paths = ["/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"],
        linked_paths = ["/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"],
    )
