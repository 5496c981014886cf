import { stringify } from 'yaml';
import { openApiDocument } from '../src/management/openapi.js';

/** Where `npm run openapi` writes the document, from the repository root. */
export const OPENAPI_YAML_PATH = 'docs/openapi.yaml';

/** `docs/openapi.yaml` as `npm run openapi` writes it: the document of `src/management/openapi.ts` in YAML. */
export function openApiYaml(): string {
  const header = '# Generated from src/management/openapi.ts by `npm run openapi`: edit that file, not this one.\n';
  // No anchors and aliases: every reader of the file sees each part spelled out where it is used.
  return header + stringify(openApiDocument(), { aliasDuplicateObjects: false, lineWidth: 0 });
}
