"""Scale-out on NATS JetStream: API nodes queue tasks, ``spoton worker`` processes run them (docs/scale-out.md).

* ``names``: the stream, subjects and buckets of one deployment.
* ``records``: task and worker records as stored in the KV buckets.
* ``jetstream``: connecting and creating the stream, the consumer, the buckets (idempotent).
* ``task_board``: the API side — queue, find, list, stop tasks of the whole cluster.
* ``lease``: renews a running task's lease from its own thread; fences a worker that lost it.
* ``checkpoints``: a running task's resume point (KV) and pipeline state (object store).
* ``worker``: pulls tasks when it has room, runs, checkpoints, hands back or resumes them.
"""
