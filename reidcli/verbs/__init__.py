"""What the verbs do: the orchestration of `reid eval`, `rerank`, `embed`, `export`, `index`,
`search` and `bench`, between `reidcli.api` above and the packages that do the work below
(`inference`, `engine`, `export`, `index`, `metrics`).

Each module takes its verb's options model (`reidcli.recipe.options`, or a recipe section) and
returns its typed result (`reidcli.results`). A new verb goes here as a module, with a
function in `reidcli.api` and a command in `reidcli.cli`.
"""
