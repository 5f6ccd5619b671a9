"""`python -m rsbench ...`: the CLI without relying on the console script (the benchmark runs stage commands so)."""

from rsbench.cli import app

if __name__ == "__main__":
    app(prog_name="rsbench")
