"""Key content and ROUGE-L: what the gate and the Models page judge a version's held-out answers by."""

import pytest

from training.answer_metrics import answer_metrics, key_content, rouge_l, says_key_content

COMMAND = "Restart it with `systemctl restart nginx`, then read /var/log/nginx/error.log (port 8080)."


def test_key_content_is_code_numbers_paths_and_names_not_sentence_starts():
    assert key_content(COMMAND) == {"systemctl restart nginx", "/var/log/nginx/error.log", "8080"}
    assert key_content("```bash\nkubectl rollout restart deploy/api\n```\nDone.") == {
        "kubectl rollout restart deploy/api"}
    assert key_content("The capital of France is Paris.") == {"france", "paris"}
    assert key_content("Yes. It works fine, thanks.") == set()


def test_an_answer_says_the_key_content_only_with_every_item_in_any_case_or_spacing():
    assert says_key_content("Run  SYSTEMCTL restart nginx; logs: /var/log/nginx/error.log, port 8080.", COMMAND)
    assert not says_key_content("Run systemctl restart nginx and check the logs.", COMMAND)
    assert says_key_content("anything", "Sounds good, thanks.") is None


def test_rouge_l_is_the_longest_common_subsequence_f_measure():
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("same words", "Same, words!") == 1.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("alpha", "beta") == 0.0


def test_answer_metrics_share_counts_only_pairs_with_key_content():
    answers = ["systemctl restart nginx, /var/log/nginx/error.log, 8080", "no idea", "fine"]
    preferred = [COMMAND, "Use `make test`.", "Thanks, that helps."]
    metrics = answer_metrics(answers, preferred)
    assert metrics["key_content_pairs"] == 2 and metrics["key_content_share"] == 0.5
    assert 0 < metrics["rouge_l"] < 1
    assert metrics["mean_answer_chars"] == pytest.approx(sum(map(len, answers)) / 3)
