"""``python -m handrail.cli``: the same as the ``handrail`` command."""

from . import main

if __name__ == "__main__":  # importing this module (as tests that walk src/ do) runs nothing
    main()
