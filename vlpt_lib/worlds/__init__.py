"""Generated worlds: test fixtures written to disk in the real formats, never readers.

    mini_world    the smoke / mini profiles' procedurally painted stand-in for the papers' datasets
    render        the painting: shapes, textures, scenes and styles the mini world is made of
    paper_world   the paper profile's dry run: a data root shaped exactly like the real one

Only the profile module (vlpt_lib.workbook.profiles) and the tests import this package (an import-linter
`protected` contract in pyproject.toml): jobs and the data readers receive explicit paths and never know
whether a world was generated. What both sides must agree on about the layout on disk (the stamp file,
the dataset names) lives in vlpt_lib.data.world_layout.
"""
