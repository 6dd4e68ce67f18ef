"""The study's stages, one module each; `pipeline.stages(cfg)` lists them in dependency order.

Each module owns its folder of the work dir, writes it atomically, and offers one reader
per artifact, so no stage opens another stage's files by path.
"""
