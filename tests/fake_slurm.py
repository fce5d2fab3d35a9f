"""A stand-in for SLURM's sbatch and srun on one machine, to run hydra/launcher=submitit_slurm
end to end in tests: sbatch keeps a copy of each submission script, answers with a job id and runs
the array tasks one after the other in the background; srun starts the script's command once per
task with the variables SLURM sets (rank, local rank, task count, node list, job ids), so submitit,
Lightning and the job see a cluster job."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

SBATCH = r"""
import os, re, subprocess, sys
from pathlib import Path

# sbatch <script>: answer at once (submitit writes the job's inputs only after it has the job id),
# and run the array tasks one after the other in a detached process: sbatch --run <script> <job>
if sys.argv[1] == "--run":
    script, job = Path(sys.argv[2]), int(sys.argv[3])
else:
    script = Path(sys.argv[-1])
    state = Path(os.environ["FAKE_SLURM_DIR"])
    counter = state / "next_job_id"
    job = int(counter.read_text()) if counter.exists() else 1000
    counter.write_text(str(job + 1))
    copy = state / f"sbatch_{job}.sh"
    copy.write_text(script.read_text())
    with open(state / f"sbatch_{job}.log", "w") as log:
        subprocess.Popen(
            [sys.executable, __file__, "--run", str(copy), str(job)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"Submitted batch job {job}")
    sys.exit(0)

text = script.read_text()

def flag(name, default=None):
    found = re.search(rf"^#SBATCH --{name}=(\S+)", text, re.M)
    return found.group(1) if found else default

array = flag("array")
tasks = [None]
if array:
    low, high = re.match(r"(\d+)-(\d+)", array).groups()
    tasks = list(range(int(low), int(high) + 1))
per_node = int(flag("ntasks-per-node", "1"))
nodes = int(flag("nodes", "1"))
for index in tasks:
    env = dict(os.environ)
    env.update(
        SLURM_JOB_ID=str(job if index is None else job * 100 + index),
        SLURM_JOB_NAME=flag("job-name", "job"),
        SLURM_NTASKS=str(per_node * nodes),
        SLURM_NTASKS_PER_NODE=str(per_node),
        SLURM_JOB_NUM_NODES=str(nodes),
        SLURM_NNODES=str(nodes),
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="localhost",
        SLURM_NODELIST="localhost",
    )
    if index is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(index))
    subprocess.run(["bash", str(script)], env=env, check=False)
"""

SRUN = r"""
import os, subprocess, sys

args = sys.argv[1:]
options = {}
while args and args[0].startswith("--"):
    name = args.pop(0)
    if name in ("--output", "--error"):
        options[name] = args.pop(0)
command = args

def expand(pattern, rank):
    for key, value in (
        ("%A", os.environ.get("SLURM_ARRAY_JOB_ID", "")),
        ("%a", os.environ.get("SLURM_ARRAY_TASK_ID", "")),
        ("%j", os.environ["SLURM_JOB_ID"]),
        ("%t", str(rank)),
    ):
        pattern = pattern.replace(key, value)
    return pattern

processes = []
for rank in range(int(os.environ["SLURM_NTASKS"])):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
    files = {}
    for option, stream in (("--output", "stdout"), ("--error", "stderr")):
        if option in options:
            path = expand(options[option], rank)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            files[stream] = open(path, "a")
    processes.append(subprocess.Popen(command, env=env, **files))
sys.exit(max(p.wait() for p in processes))
"""


def install(folder: Path) -> dict[str, str]:
    """Write ``sbatch`` and ``srun`` into ``folder/bin``; the environment that puts them first on
    the PATH (the submission scripts land in ``folder``)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("sbatch", SBATCH), ("srun", SRUN)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["FAKE_SLURM_DIR"] = str(folder)
    return env
