"""Agent preference pairs written from real trajectories (../shared/datasets/agent_traces, Harbor's golden ATIF files,
Apache-2.0; read by ftdata's own ATIF reader): a trajectory's prefix is the prompt, `chosen` its real continuation
of several messages, `rejected` a continuation written for the tests (the same shape, edited: another call, its
result, another next turn). The sides diverge at an assistant turn after the prefix.

- `openhands`: openhands-hello-world.trajectory.json: the system prompt and the task (the harness's two context
  steps after them left out: a pair's messages hold one system message, first), then chosen = the agent's
  `str_replace_editor` call, its `tool` result and the `finish` turn; rejected = an `execute_bash` call, a
  permission error, a finish that claims success. With its 6 tool schemas.
- `terminus`: terminus_2-hello-world-timeout.trajectory.json: the task, the first call (echo) and its terminal
  output are shared; chosen = the trajectory's next call (`sleep 50`), its output, the call after it; rejected =
  writing hello.txt, its output, a `cat`. Mid-trajectory: the divergence comes after a shared call and result.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from support import DATASETS

from ftdata.errors import Location
from ftdata.records.formats import to_examples

ATIF = DATASETS / "agent_traces" / "atif"


def _trajectory(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    (example,) = to_examples(json.loads((ATIF / name).read_text()), Location(name))
    return example.chat_messages(), list(example.tools)


def openhands() -> dict[str, Any]:
    messages, tools = _trajectory("openhands-hello-world.trajectory.json")
    assert [m["role"] for m in messages] == ["system", "user", "system", "system", "assistant", "tool", "assistant"]
    chosen = messages[4:]
    rejected = copy.deepcopy(chosen)
    rejected[0]["content"] = "I will write the file with echo."
    rejected[0]["tool_calls"][0]["function"].update(
        name="execute_bash", arguments={"command": "echo Hello > /app/hello.txt", "security_risk": "LOW"}
    )
    rejected[1]["content"] = "bash: /app/hello.txt: Permission denied"
    rejected[2]["content"] = "Done, the file is created."
    rejected[2]["tool_calls"][0]["function"]["arguments"] = {"message": "Created hello.txt."}
    return {"prompt": messages[:2], "chosen": chosen, "rejected": rejected, "tools": tools}


def terminus() -> dict[str, Any]:
    messages, _ = _trajectory("terminus_2-hello-world-timeout.trajectory.json")
    assert [m["role"] for m in messages][:6] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    chosen = messages[3:6]
    rejected = copy.deepcopy(chosen)
    rejected[0]["content"] = "Analysis: The greeting is printed.\nPlan: Write it to hello.txt."
    rejected[0]["tool_calls"][0]["function"]["arguments"] = {
        "keystrokes": "echo 'Hello, world!' > hello.txt\n",
        "duration": 0.1,
    }
    rejected[1]["content"] = "New Terminal Output:\n\nroot@CONTAINER_ID:/app# echo 'Hello, world!' > hello.txt\n\n\n"
    rejected[2]["content"] = "Analysis: hello.txt is written.\nPlan: Check it."
    rejected[2]["tool_calls"][0]["function"]["arguments"] = {"keystrokes": "cat hello.txt\n", "duration": 0.1}
    return {"prompt": messages[:3], "chosen": chosen, "rejected": rejected}
