"""A Python implementation of the same specification, the way the earlier Python implementations
(seeds 001-004) built it, for docs/performance.md to measure faas against in the same run: a
FastAPI gateway on uvicorn with redis-py, and a local dispatcher that follows the spec's Redis
``tasks`` channel and runs each task with dill in a ``multiprocessing.Pool``. Their own code is
not available here; this is written from the specification and their reports (about 150 lines,
as theirs were), not a copy, and it is a benchmark peer only: no fault tolerance, no limits.

    python pyfaas.py gateway PORT REDIS_URL          # uvicorn, one process
    python pyfaas.py dispatcher WORKERS REDIS_URL    # the local dispatcher
"""

import codecs
import json
import sys
import uuid
from typing import Any, Dict, List

import redis

CHANNEL = "tasks"


def encode(obj: Any) -> str:
    import dill

    return codecs.encode(dill.dumps(obj), "base64").decode()


def decode(text: str) -> Any:
    import dill

    return dill.loads(codecs.decode(text.encode(), "base64"))


def make_app(url: str) -> Any:
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    app = FastAPI()
    r = redis.Redis.from_url(url, decode_responses=True)

    class RegisterFn(BaseModel):
        name: str
        payload: str

    class ExecuteFnReq(BaseModel):
        function_id: uuid.UUID
        payload: str

    @app.post("/register_function")
    def register(fn: RegisterFn) -> Dict[str, str]:
        fid = str(uuid.uuid4())
        r.hset(f"function:{fid}", mapping={"name": fn.name, "payload": fn.payload})
        return {"function_id": fid}

    @app.post("/execute_function")
    def execute(req: ExecuteFnReq) -> Dict[str, str]:
        fn = r.hget(f"function:{req.function_id}", "payload")
        if fn is None:
            raise HTTPException(status_code=404, detail="function not found")
        tid = str(uuid.uuid4())
        r.hset(f"task:{tid}", mapping={"status": "QUEUED", "function_id": str(req.function_id),
                                       "payload": req.payload, "result": ""})
        r.publish(CHANNEL, tid)
        return {"task_id": tid}

    @app.get("/status/{task_id}")
    def status(task_id: uuid.UUID) -> Dict[str, str]:
        st = r.hget(f"task:{task_id}", "status")
        if st is None:
            raise HTTPException(status_code=404, detail="task not found")
        return {"task_id": str(task_id), "status": st}

    @app.get("/result/{task_id}")
    def result(task_id: uuid.UUID) -> Dict[str, Any]:
        st, res = r.hmget(f"task:{task_id}", "status", "result")
        if st is None:
            raise HTTPException(status_code=404, detail="task not found")
        return {"task_id": str(task_id), "status": st, "result": res or None}

    return app


_redis: Any = None


def _init(url: str) -> None:
    global _redis
    _redis = redis.Redis.from_url(url, decode_responses=True)


def run_task(tid: str) -> None:
    """Runs in a pool process: load, call, store (as the seeds' local dispatchers did)."""
    fid, payload = _redis.hmget(f"task:{tid}", "function_id", "payload")
    fn = decode(_redis.hget(f"function:{fid}", "payload"))
    try:
        args, kwargs = decode(payload)
        out, status = encode(fn(*args, **kwargs)), "COMPLETED"
    except Exception as e:  # noqa: BLE001 - the task's exception is its result
        out, status = encode(e), "FAILED"
    _redis.hset(f"task:{tid}", mapping={"status": status, "result": out})


def dispatcher(workers: int, url: str) -> None:
    import multiprocessing

    r = redis.Redis.from_url(url, decode_responses=True)
    sub = r.pubsub()
    sub.subscribe(CHANNEL)
    with multiprocessing.Pool(workers, initializer=_init, initargs=(url,)) as pool:
        print(json.dumps({"ready": True}), flush=True)
        for msg in sub.listen():
            if msg["type"] != "message":
                continue
            tid = msg["data"]
            r.hset(f"task:{tid}", "status", "RUNNING")
            pool.apply_async(run_task, (tid,))


def main(argv: List[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("gateway", "dispatcher"):
        sys.exit(__doc__)
    if argv[0] == "gateway":
        import uvicorn

        uvicorn.run(make_app(argv[2]), host="127.0.0.1", port=int(argv[1]), log_level="warning",
                    access_log=False)
    else:
        dispatcher(int(argv[1]), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
