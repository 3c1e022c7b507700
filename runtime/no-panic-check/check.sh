#!/usr/bin/env bash
# Proves that no kiln-runtime kernel has a panic path on Cortex-M.
#
# Builds the bare-metal binary in this folder (every kernel called from an unmangled
# entry point with params and slices it cannot see) for thumbv7em-none-eabihf and
# thumbv6m-none-eabi, each in release and in size-optimized release (`opt-level = "z"`,
# where less gets inlined), and lists its symbols with llvm-nm. The link
# uses --gc-sections rooted at `_start`, so the ELF holds exactly the code the kernels
# reach. Nothing panic-related is allowed, not even the binary's own panic handler: a
# panic handler nobody calls is removed by the linker, so its presence alone means some
# kernel can panic. The patterns cover core's panic entry points (`panic_bounds_check`,
# `panic_const_div_by_zero`, `panic_fmt`, `unwrap_failed`, ...), the slice-index
# failures that do not say "panic" (`slice_index_fail`, `slice_end_index_len_fail`,
# `copy_from_slice` length mismatch), and the handler itself (`rust_begin_unwind`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-$here/target}")"
cd "$here"

targets="thumbv7em-none-eabihf thumbv6m-none-eabi"
host="$(rustc -vV | sed -n 's/^host: //p')"
nm="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-nm"
if [ ! -x "$nm" ]; then
  rustup component add llvm-tools
fi
# shellcheck disable=SC2086
rustup target add $targets >/dev/null 2>&1 || true

forbidden='panic|unwind|slice_index|index_len_fail|len_mismatch|unwrap_failed|expect_failed|assert_failed|unreachable'
# Every entry point defined in src/main.rs must be in the ELF, or the check proves nothing.
entry_points="$(grep -oE '^ +kiln_[a-z0-9_]+\(' src/main.rs | tr -d ' (' | sort)"
count="$(printf '%s\n' "$entry_points" | wc -l)"

# check TARGET PROFILE: builds the binary and inspects its symbols; non-zero on failure.
check() {
  local target=$1 profile=$2
  echo "== no-panic check: $target, profile $profile"
  CARGO_TARGET_DIR="$target_dir" cargo build --quiet --locked --profile "$profile" --target "$target" || return 1
  local elf="$target_dir/$target/$profile/kiln-no-panic-check"
  local symbols missing bad
  symbols="$("$nm" --demangle "$elf")"
  missing="$(comm -23 <(printf '%s\n' "$entry_points") \
    <(printf '%s\n' "$symbols" | awk '$2 == "T" { print $3 }' | sort))"
  if [ -n "$missing" ]; then
    echo "error: entry points missing from $elf:" >&2
    printf '%s\n' "$missing" | sed 's/^/  /' >&2
    return 1
  fi
  bad="$(printf '%s\n' "$symbols" | grep -Ei "$forbidden" || true)"
  if [ -n "$bad" ]; then
    echo "error: kernels can panic ($target, $profile): these symbols are linked in" >&2
    printf '%s\n' "$bad" | sed 's/^/  /' >&2
    return 1
  fi
  echo "ok: $count entry points, $(printf '%s\n' "$symbols" | wc -l) symbols, none panic-related"
}

status=0
for target in $targets; do
  for profile in release release-size; do
    check "$target" "$profile" || status=1
  done
done
exit "$status"
