"""Preference pairs with a clear, checkable preference: the exact shell command in backticks beats a vague
answer. Used by the tests and bench/training.py (which must run without the database)."""

from __future__ import annotations

TASKS = [
    ("list the files in a directory, including hidden ones", "ls -la"),
    ("show the disk usage of the current folder", "du -sh ."),
    ("find every Python file below this folder", "find . -name '*.py'"),
    ("see the last 100 lines of a log file", "tail -n 100 app.log"),
    ("follow a log file as it grows", "tail -f app.log"),
    ("count the lines in a file", "wc -l file.txt"),
    ("search for a word in all files recursively", "grep -rn word ."),
    ("show running processes", "ps aux"),
    ("kill the process with id 1234", "kill 1234"),
    ("check free memory", "free -h"),
    ("show free disk space", "df -h"),
    ("make a directory with its parents", "mkdir -p a/b/c"),
    ("copy a folder recursively", "cp -r src dst"),
    ("show the current git branch", "git branch --show-current"),
    ("see what changed in git", "git status"),
    ("undo unstaged changes to a file in git", "git checkout -- file.txt"),
    ("list docker containers", "docker ps"),
    ("show the logs of a docker container", "docker logs web"),
    ("list kubernetes pods", "kubectl get pods"),
    ("restart a systemd service", "sudo systemctl restart nginx"),
    ("see which process listens on port 8080", "lsof -i :8080"),
    ("download a file from a URL", "curl -O https://example.com/f.tar.gz"),
    ("extract a tar.gz archive", "tar -xzf f.tar.gz"),
    ("make a script executable", "chmod +x run.sh"),
    ("show my IP addresses", "ip addr"),
    ("print environment variables", "env"),
    ("show the size of each file in a folder", "ls -lh"),
    ("see the first 20 lines of a file", "head -n 20 file.txt"),
    ("compare two files", "diff a.txt b.txt"),
    ("show the date and time", "date"),
    ("install a Python package", "pip install requests"),
    ("create a Python virtual environment", "python -m venv .venv"),
]
QUESTIONS = ["How do I {task}?", "What is the command to {task}?"]
VAGUE = "There are several ways to do that, it depends on your system. You could look it up in the documentation."


def synthetic_pairs(count: int) -> list[dict]:
    """`count` conversational preference records (TRL format), cycling through tasks and phrasings."""
    records = []
    for i in range(count):
        task, command = TASKS[i % len(TASKS)]
        question = QUESTIONS[(i // len(TASKS)) % len(QUESTIONS)].format(task=task)
        if round_ := i // (len(TASKS) * len(QUESTIONS)):  # distinct prompts beyond the first 64: the store dedupes
            question += f" (ticket {round_})"
        records.append({
            "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": f"Run `{command}`."}],
            "rejected": [{"role": "assistant", "content": VAGUE}],
        })
    return records
