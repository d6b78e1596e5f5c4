"""Model families on diffusers, tiny stand-in weights, and the pool of loaded pipelines.

Importing this package must stay cheap and torch-free: the API process imports
`toonforge.engine.contract`. Modules that need torch (`runtime`, `sd15`, `prompt_embeds`,
`tiny.sd15`, ...) are imported by the worker only.
"""
