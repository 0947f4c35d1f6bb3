"""The explorer as a front end meets it: a real kernel, a slider moved by a comm message as JupyterLab sends it, and
the widget updates the kernel publishes meanwhile. The busy state must reach the front end before the new table and
figure, and be cleared only after them (order of messages, not their timing, so no machine can cross a threshold).
The table starts with the advisor's answer, and a change of the tolerance δ updates it. The explorer computes in a
background thread, so each move is followed until the status line says the new result is shown (or why not), not
until the kernel goes idle, which it does at once."""
import json, queue

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
from jupyter_client.manager import start_new_kernel

SETUP = """from netdeviation.explorer import Explorer
ui = Explorer(amounts=(0.5, 0.8), amount=0.5)
ui.wait()  # the first result: the widget itself was shown before it
import json
print(json.dumps({"controls": [w.model_id for w in ui.controls.values()], "amount": ui.controls["amount"].model_id,
                  "tolerance": ui.controls["tolerance"].model_id, "tolerances": [t for _, t in ui.controls["tolerance"].options],
                  "status": ui.status.model_id, "table": ui.table.model_id, "figure": ui.figure.model_id}))"""


def _iopub(kc)->dict:
    "The kernel's next iopub message; after 300 s of silence the kernel has hung."
    try: return kc.get_iopub_msg(timeout=300)
    except queue.Empty: raise AssertionError("the kernel sent nothing for 300 s: it hung") from None


def _execute(kc, code:str)->str:
    "Run `code` in the kernel; its stdout."
    msg_id, out = kc.execute(code), []
    while True:
        m = _iopub(kc)
        if m["parent_header"].get("msg_id") != msg_id: continue
        if m["msg_type"] == "stream": out.append(m["content"]["text"])
        if m["msg_type"] == "error": raise AssertionError("\n".join(m["content"]["traceback"]))
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle": return "".join(out)


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="python3")
    try: yield kc
    finally: kc.stop_channels(); km.shutdown_kernel(now=True)


def _final(state:dict)->bool:
    "True for the status line's last word on a computation: shown, or could not compute."
    return "showing " in state.get("value", "") or "could not compute" in state.get("value", "")


def _move(kc, comm_id:str, status_id:str, index:int)->list:
    "Send what JupyterLab sends when the user picks option `index` of a widget; the widget updates published until the kernel is idle and the status line has its last word."
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "method": "update", "state": {"index": index}, "buffer_paths": []}})
    kc.shell_channel.send(msg)
    events, idle = [], False  # (comm_id, state) of every widget update the kernel publishes, in order
    while True:
        m = _iopub(kc)
        if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update":
            state = dict(m["content"]["data"]["state"])
            for path in m["content"]["data"].get("buffer_paths", []): state[path[0]] = "<buffer>"
            events.append((m["content"]["comm_id"], state))
        idle |= (m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                 and m["parent_header"].get("msg_id") == msg["header"]["msg_id"])
        if idle and any(c == status_id and _final(s) for c, s in events): return events


@pytest.fixture(scope="module")
def ids(kernel): return json.loads(_execute(kernel, SETUP).strip().splitlines()[-1])


def test_front_end_sees_busy_state_first(kernel, ids):
    kc = kernel
    events = _move(kc, ids["amount"], ids["status"], 1)  # the slider dragged to its second option (80 %)

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
    page = events[table][1]["value"]
    assert "Net Deviation D" in page and "bound_paper" not in page
    assert page.index("how long to retrain") < page.index("Net Deviation D") < page.index("retraining bounds")  # advice first


def test_tolerance_updates_the_advice(kernel, ids):
    kc = kernel
    i = ids["tolerances"].index(0.05)
    events = _move(kc, ids["tolerance"], ids["status"], i)  # the δ dropdown set to 5 points
    tables = [s["value"] for c, s in events if c == ids["table"] and "value" in s]
    assert tables, "the table was not redrawn"
    assert "δ = 0.05" in tables[-1] and "δ = 0.01" not in tables[-1]
    assert tables[-1].index("how long to retrain") < tables[-1].index("Net Deviation D")
    done = [s["value"] for c, s in events if c == ids["status"] and "value" in s][-1]
    assert done.startswith("<span") and "showing magnitude at" in done
    shown = json.loads(_execute(kc, "print(json.dumps([ui.result.tolerance, ui.result.advice.tolerance, ui.table.value == ui.result.to_html()]))").strip().splitlines()[-1])
    assert shown == [0.05, 0.05, True]
