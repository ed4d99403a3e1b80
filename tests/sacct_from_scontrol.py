"""A stand-in for ``sacct -o JobID,State,NodeList --parsable2 -j ID ...`` on the test cluster.

The single-node Slurm of tests/conftest.py runs no accounting database (slurmdbd + MySQL), so
the real sacct has nothing to read; submitit (Hydra's Slurm launcher) polls sacct for job
states. This answers the same question from ``scontrol show job``, which knows every job of
the session (MinJobAge keeps finished ones), in sacct's pipe-separated format.
"""

from __future__ import annotations

import subprocess
import sys

FIELDS = ("JobID", "State", "NodeList")


def job_ids(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-j"]


def records(job_id: str) -> list[dict[str, str]]:
    """One record per job, or per element of an array (JobID ``<array id>_<index>``, as sacct)."""
    shown = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True)
    found = []
    for line in shown.stdout.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "ArrayTaskId" in fields:
            fields["JobId"] = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
        found.append({"JobID": fields["JobId"], "State": fields["JobState"], "NodeList": fields.get("NodeList", "")})
    return found


def main() -> None:
    print("|".join(FIELDS))
    for job_id in job_ids(sys.argv[1:]):
        for record in records(job_id):
            print("|".join(record[field] for field in FIELDS))


if __name__ == "__main__":
    main()
