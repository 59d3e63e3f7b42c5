"""The ``qatbench`` command: ``python -m harness`` under a name that cannot collide."""

import sys

from qatbench import shadowed_message, shadowing_harness


def main(argv=None) -> int:
    other = shadowing_harness()
    if other is not None:
        print(f"error: {shadowed_message(other)}", file=sys.stderr)
        return 2
    from harness.__main__ import main as harness_main

    return harness_main(argv)


if __name__ == "__main__":
    sys.exit(main())
