/** The most names a key's `models` allow-list may hold. */
export const MAX_ALLOWED_MODELS = 100;
/** The longest model name (or prefix, with its `*`) an allow-list may hold: the ledger's limit on a model name. */
export const MAX_MODEL_NAME_LENGTH = 200;

/**
 * Whether a key's `models` allow-list lets it call `model`: `null` allows every model; otherwise an
 * entry must be the model's exact name, or a prefix of it ending in `*` (`gpt-4o*` allows `gpt-4o`
 * and `gpt-4o-mini`). Case-sensitive, as providers' model names are.
 *
 * @example
 * ```ts
 * isModelAllowed(['gpt-4o-mini', 'claude-*'], 'claude-3-5-haiku'); // true
 * isModelAllowed(['gpt-4o-mini'], 'gpt-4o'); // false
 * isModelAllowed(null, 'anything'); // true
 * ```
 */
export function isModelAllowed(models: readonly string[] | null, model: string): boolean {
  if (models === null) return true;
  for (const entry of models) {
    if (entry.endsWith('*') ? model.startsWith(entry.slice(0, -1)) : model === entry) return true;
  }
  return false;
}
