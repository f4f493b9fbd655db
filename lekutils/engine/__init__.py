"""Engine layer: model specs and loading, chat prompts, the generator interface and engines."""
