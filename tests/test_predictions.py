import json

import pytest

from workings.evaluation.scoring import score
from workings.evaluation.generate import Generation
from workings.evaluation.predictions import FIELDS, read_predictions, write_predictions


def scored(id, text, question="What is 3 + 4?"):
    return score(question, "7", Generation(prompt="p", text=text, new_tokens=5, truncated=False), id=id)


def test_predictions_round_trip_with_newlines_quotes_unicode_and_missing_answers(tmp_path):
    replies = [
        scored("q-1", '<reasoning>3 + 4 = 7, "so"\nseven ✓</reasoning>\n<answer>7</answer>'),
        scored("q-2", "I think it is seven."),
    ]
    path = write_predictions(tmp_path / "out" / "predictions.jsonl", replies)
    assert read_predictions(path) == [
        {"id": "q-1", "question": "What is 3 + 4?", "response": replies[0].output, "answer": "7"},
        {"id": "q-2", "question": "What is 3 + 4?", "response": "I think it is seven.", "answer": None},
    ]
    assert list(json.loads(path.read_text().splitlines()[0])) == list(FIELDS)


def test_writing_again_replaces_the_file_whole(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [scored("a", "x"), scored("b", "y")])
    write_predictions(path, [scored("c", "z")])
    assert [r["id"] for r in read_predictions(path)] == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


def test_repeated_ids_are_refused_and_the_old_file_kept(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", [scored("a", "x")])
    with pytest.raises(ValueError, match="ids must be unique; repeated: \\['b'\\]"):
        write_predictions(path, [scored("b", "x"), scored("b", "y")])
    assert [r["id"] for r in read_predictions(path)] == ["a"]


def test_a_line_with_missing_fields_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "question": "q", "response": "r", "answer": null}\n{"id": "b", "question": "q"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl, line 2: expected fields \['id', 'question', 'response', 'answer'\]"):
        read_predictions(path)
