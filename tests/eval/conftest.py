"""Record builders for the eval tests: trajectories as their `to_json()` dicts (the rollout
contract), so the tests need no model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmsr.eval.records import EvalRecord


def trajectory_json(answer: str | None, n_image: int = 0, n_text: int = 0, **extra) -> dict:
    turns, calls = [], []
    turn = 0
    for _ in range(n_image):
        turns.append(
            {
                "text": "<reason>unsure</reason><search><img></search>",
                "action": "image_search",
                "observation": "<information>...</information>",
            }
        )
        calls.append(
            {
                "kind": "image_search",
                "query": "",
                "latency_ms": 1.0,
                "turn": turn + 1,
                "response": {
                    "results": [
                        {
                            "title": "Flag page",
                            "url": "world://p",
                            "snippet": "a flag",
                            "thumbnail": "",
                        }
                    ],
                    "backend": "local",
                    "cached": False,
                    "latency_ms": 1.0,
                },
            }
        )
        turn += 1
    for _ in range(n_text):
        turns.append(
            {
                "text": "<reason>look up</reason><text_search>capital of X</text_search>",
                "action": "text_search",
                "observation": "<information>...</information>",
            }
        )
        calls.append(
            {
                "kind": "text_search",
                "query": "capital of X",
                "latency_ms": 1.0,
                "turn": turn + 1,
                "response": {"results": [], "backend": "local", "cached": False, "latency_ms": 1.0},
            }
        )
        turn += 1
    if answer is not None:
        turns.append(
            {
                "text": f"<reason>so</reason><answer>{answer}</answer>",
                "action": "answer",
                "observation": "",
            }
        )
    return {
        "sample_id": "x",
        "group": 0,
        "turns": turns,
        "tool_calls": calls,
        "n_image_search": n_image,
        "n_text_search": n_text,
        "answer": answer,
        "solution_str": "",
        "finish_reason": "answer" if answer is not None else "max_turns",
        **extra,
    }


@pytest.fixture
def make_record():
    def make(
        sample_id: str,
        prediction: str | None,
        gold: str = "Paris",
        *,
        n_image: int = 0,
        n_text: int = 0,
        qtype: str = "capital",
        category: str = "search_free",
        tags: list[str] | None = None,
        correct: bool | None = None,
        mode: str = "ondemand",
    ) -> EvalRecord:
        from mmsr.reward import RewardConfig, answer_matches

        rule = prediction is not None and answer_matches(prediction, [gold], RewardConfig())
        return EvalRecord(
            sample_id=sample_id,
            mode=mode,
            question=f"What is the capital? ({sample_id})",
            golds=[gold],
            source=f"world/{qtype}",
            qtype=qtype,
            category=category,
            tags=tags if tags is not None else ["geography", qtype],
            prediction=prediction,
            finish_reason="answer" if prediction else "max_turns",
            n_image_search=n_image,
            n_text_search=n_text,
            correct_rule=rule if correct is None else correct,
            trajectory=trajectory_json(prediction, n_image, n_text),
        )

    return make


class FakeChat:
    """A chat-completions server; `script` maps a candidate answer to (status, body)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: dict[str, list[tuple[int, str]]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                candidate = body["messages"][-1]["content"].split("Candidate answer: ")[1]
                candidate = candidate.split("\n")[0]
                queue = fake.script.get(candidate) or [(200, completion("CORRECT"))]
                status, text = queue.pop(0) if len(queue) > 1 else queue[0]
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def completion(content) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "judge-m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51},
        }
    )


@pytest.fixture
def fake_chat():
    server = FakeChat()
    yield server
    server.close()
