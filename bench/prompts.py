"""A fixed set of realistic team-assistant chat prompts, short to long, for the serving benchmark."""

from __future__ import annotations

QUESTIONS = [
    "How do I undo my last git commit but keep the changes?",
    "What is the difference between a process and a thread?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Our CI pipeline takes 40 minutes. What are the first three things you would look at to speed it up?",
    "Explain what a database index is and when adding one makes writes slower.",
    "How should we name feature flags so that we can clean them up later?",
    "What does HTTP status code 429 mean and how should a client react to it?",
    "Summarize the trade-offs between PostgreSQL and SQLite for a small internal tool.",
    "Give me a checklist for reviewing a pull request that changes a public API.",
    "Why might a Kubernetes pod be stuck in CrashLoopBackOff, and how do I find out?",
    "How do I write a unit test for a function that calls the current time?",
    "What is a race condition? Give a short example in Python.",
    "Draft a short, friendly message telling the team the staging database will be down tonight.",
    "When should we use a message queue instead of calling another service directly?",
    "Explain semantic versioning in three sentences.",
    "What is the fastest way to find which commit introduced a bug?",
]
CONTEXTS = [
    "",
    "I am new to the team and still learning our stack. ",
    "We run a Python monorepo with about 30 services, deployed on Kubernetes, with PostgreSQL as the main "
    "database and GitHub Actions for CI. Most of the team works remotely across three time zones. ",
    "Context: last week an incident took our checkout service down for an hour because a migration locked a "
    "large table, and the on-call engineer could not tell from the dashboards which deploy caused it. We want "
    "to avoid that happening again and are reviewing our practices one by one. With that in mind: ",
]


def chat_prompts(count: int) -> list[list[dict[str, str]]]:
    """`count` distinct conversations (each a user message), cycling through questions and contexts."""
    combos = [context + question for context in CONTEXTS for question in QUESTIONS]
    return [[{"role": "user", "content": combos[i % len(combos)] + ("" if i < len(combos) else f" (#{i})")}]
            for i in range(count)]

# A team's long system prompt (about 1,000 tokens of house rules), for the prefix-caching figure: every
# conversation starts with it, so vLLM can reuse its KV cache instead of recomputing it per request.
TOPICS = ["deploys", "database migrations", "on-call hand-overs", "incident reviews", "feature flags",
          "code review", "dependency upgrades", "secrets", "customer data", "CI failures"]
RULES = ["Name the exact command or file when you know it, and say when you are guessing.",
         "Prefer the runbook in the wiki over memory, and link the page you used.",
         "Never suggest skipping a review or a test to go faster; suggest what to split instead.",
         "If the question touches production, remind the asker who is on call this week."]
LONG_SYSTEM_PROMPT = "You are the engineering team's assistant. House rules follow.\n" + "\n".join(
    f"{number}. About {topic}: {rule}" for number, (topic, rule) in
    enumerate(((t, r) for t in TOPICS for r in RULES), start=1)
)
