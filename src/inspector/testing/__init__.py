"""Emulators of the Greengrass side, for tests and laptops (nothing here runs on a device).

- ``inspector.testing.eventstream``: event-stream framing (pure).
- ``inspector.testing.nucleus``: ``NucleusEmulator``, the nucleus IPC server on a Unix socket.
- ``inspector.testing.streammanager``: ``StreamManagerEmulator``, StreamManager on TCP with an
  S3 export executor that writes into a local folder.
- ``inspector.testing.fixtures``: context managers that start them and hand out ``.env``.
- ``inspector.testing.simcore``: ``SimulatedCore``, a Greengrass core that deploys GDK build
  output (layout, recipe variables, lifecycle steps, deployments) against the nucleus emulator.

Both speak the real wire protocols: test against them with the unmodified ``awsiotsdk`` and
``stream_manager`` clients, in-process or from a component started as a subprocess.
"""
