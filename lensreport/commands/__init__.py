"""The commands behind `lensreport`: build, serve, gh-deploy, new, validate, train-lens."""
