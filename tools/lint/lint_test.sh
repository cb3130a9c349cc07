#!/usr/bin/env bash
# Fails when a C++ file is not clang-formatted (Google style, .clang-format),
# or when a BUILD/.bzl file has a tab, trailing whitespace or no final
# newline. buildifier itself is not run: it ships only through the npm
# registry and Go sources, neither of which this project's machines reach.
#
# The test reads the source tree itself: it follows the runfiles link of
# WORKSPACE back to the workspace and lints the files git tracks (plus new,
# unignored ones). It is tagged "external" so that it runs on every
# `bazel test`, since its inputs are the whole tree.
set -euo pipefail

workspace_file="$(readlink -f "${TEST_SRCDIR}/${TEST_WORKSPACE}/WORKSPACE")"
root="$(dirname "${workspace_file}")"
cd "${root}"

if git -C "${root}" rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t files < <(git -C "${root}" ls-files --cached --others --exclude-standard)
else
  mapfile -t files < <(find . -type f -not -path './bazel-*' -not -path './third_party/torch2/site*' | sed 's|^\./||')
fi

cpp_files=()
build_files=()
for file in "${files[@]}"; do
  [[ -f "${file}" ]] || continue
  case "${file}" in
    *.tpl) ;; # templates with placeholders are not valid Starlark
    *.cc | *.h) cpp_files+=("${file}") ;;
    *BUILD.bazel | *BUILD | *.bzl | WORKSPACE | */BUILD.*) build_files+=("${file}") ;;
  esac
done

status=0
if ((${#cpp_files[@]} > 0)); then
  if ! clang-format --dry-run -Werror --style=file "${cpp_files[@]}"; then
    echo "lint: C++ files above are not clang-formatted; fix with: clang-format -i FILE" >&2
    status=1
  fi
fi
if ((${#build_files[@]} > 0)); then
  if grep -n -P '\t| +$' "${build_files[@]}"; then
    echo "lint: BUILD/.bzl lines above have a tab or trailing whitespace" >&2
    status=1
  fi
  for file in "${build_files[@]}"; do
    if [[ -s "${file}" && "$(tail -c1 "${file}" | od -An -c | tr -d ' ')" != '\n' ]]; then
      echo "lint: ${file} does not end with a newline" >&2
      status=1
    fi
  done
fi
if ((status == 0)); then
  echo "lint: ${#cpp_files[@]} C++ and ${#build_files[@]} Bazel files are formatted"
fi
exit "${status}"
