"""One module per numbered script; each exposes `run`-style functions `(ws, opts) -> Report`.

Stages never prompt: the CLI resolves options first. A stage that would delete user data raises
`ConfirmationNeeded` before it touches anything.
"""
