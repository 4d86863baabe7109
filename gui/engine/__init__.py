"""The transfer engine: pure asyncio, no Qt. Driven by the UI, the CLI and tests."""
