"""The explorer as a front end meets it: a real kernel, a slider moved by a comm message as JupyterLab sends it, and
the widget updates the kernel publishes meanwhile. The busy state must reach the front end before the new table and
figure, and be cleared only after them (order of messages, not their timing, so no machine can cross a threshold)."""
import json, queue

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
from jupyter_client.manager import start_new_kernel

SETUP = """from netdeviation.explorer import Explorer
ui = Explorer(amounts=(0.5, 0.8), amount=0.5)
import json
print(json.dumps({"controls": [w.model_id for w in ui.controls.values()], "amount": ui.controls["amount"].model_id,
                  "status": ui.status.model_id, "table": ui.table.model_id, "figure": ui.figure.model_id}))"""


def _execute(kc, code:str)->str:
    "Run `code` in the kernel; its stdout."
    msg_id, out = kc.execute(code), []
    while True:
        m = kc.get_iopub_msg(timeout=300)
        if m["parent_header"].get("msg_id") != msg_id: continue
        if m["msg_type"] == "stream": out.append(m["content"]["text"])
        if m["msg_type"] == "error": raise AssertionError("\n".join(m["content"]["traceback"]))
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle": return "".join(out)


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="python3")
    try: yield kc
    finally: kc.stop_channels(); km.shutdown_kernel(now=True)


def test_front_end_sees_busy_state_first(kernel):
    kc = kernel
    ids = json.loads(_execute(kc, SETUP).strip().splitlines()[-1])
    # what JupyterLab sends when the user drags the slider to its second option (80 %)
    msg = kc.session.msg("comm_msg", {"comm_id": ids["amount"], "data": {
        "method": "update", "state": {"index": 1}, "buffer_paths": []}})
    kc.shell_channel.send(msg)
    events = []  # (comm_id, state) of every widget update the kernel publishes, in order
    while True:
        m = kc.get_iopub_msg(timeout=300)
        if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update":
            state = dict(m["content"]["data"]["state"])
            for path in m["content"]["data"].get("buffer_paths", []): state[path[0]] = "<buffer>"
            events.append((m["content"]["comm_id"], state))
        if (m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                and m["parent_header"].get("msg_id") == msg["header"]["msg_id"]): break

    def first(cid, key, value=None):
        "Index of the first event that sets `key` of widget `cid` (to `value`, if given)."
        return next(i for i, (c, s) in enumerate(events)
                    if c == cid and key in s and (value is None or s[key] == value))
    disabled = [first(c, "disabled", True) for c in ids["controls"]]
    enabled = [first(c, "disabled", False) for c in ids["controls"]]
    busy = first(ids["status"], "value")
    table, figure = first(ids["table"], "value"), first(ids["figure"], "value")
    done = max(i for i, (c, s) in enumerate(events) if c == ids["status"] and "value" in s)
    assert "computing magnitude at 80 %" in events[busy][1]["value"]
    assert "showing magnitude at 80 %" in events[done][1]["value"]
    assert max(disabled) < busy < min(table, figure)       # controls off and the label up before any new result
    assert max(table, figure) < min(enabled) and max(table, figure) < done  # cleared only once both are shown
    assert "Net Deviation D" in events[table][1]["value"] and "bound_paper" not in events[table][1]["value"]
