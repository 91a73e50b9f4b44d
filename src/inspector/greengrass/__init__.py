"""The Greengrass side of the service: IPC, configuration, spool, metrics and S3 uploads.

    GreengrassError (inspector.errors)
    ├── IpcError            an IPC call failed (``ipc``)
    │   ├── IpcUnavailable     no connection to the nucleus right now: retry after a reconnect
    │   ├── IpcTimeout         no answer in time: the outcome is unknown (it may have happened)
    │   └── IpcRejected        the nucleus refused it (unauthorized, invalid): retrying won't help
    └── UploadError         StreamManager unreachable or refusing a request (``streams``)

Only ``clients`` creates the real SDK clients (awsiotsdk, stream_manager); everything else is
handed them, so the core package imports without either SDK.
"""
