"""The MLflow model of a registered variant: a pyfunc that answers as the evaluator's greedy
``generate`` scoring does (the same prompt text, the same tokens, no sampling).

MLflow's "models from code": this file is copied into the logged model and run at load time,
so loading the model needs mlflow, torch and transformers, never tunelab. Its one artifact,
``model``, is the variant's Hugging Face folder with its tokenizer and chat template.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class GreedyAnswers(PythonModel):
    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def predict(self, context, model_input, params=None):
        """Each prompt, as the evaluator renders it (its chat template applied), continued greedily
        for at most ``params["max_new_tokens"]`` tokens (16 by default)."""
        import torch

        prompts = model_input.iloc[:, 0].tolist() if hasattr(model_input, "iloc") else list(model_input)
        max_new_tokens = int((params or {}).get("max_new_tokens", 16))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        answers = []
        with torch.no_grad():
            for prompt in prompts:
                ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
                output = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                             max_new_tokens=max_new_tokens, pad_token_id=pad,
                                             eos_token_id=self.tokenizer.eos_token_id)
                answers.append(self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True))
        return answers


mlflow.models.set_model(GreedyAnswers())
