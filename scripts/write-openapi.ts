import { writeFileSync } from 'node:fs';
import { OPENAPI_YAML_PATH, openApiYaml } from './openapi-yaml.js';

// npm run openapi: regenerates docs/openapi.yaml (a test fails while the committed file is stale).
writeFileSync(OPENAPI_YAML_PATH, openApiYaml());
console.log(`wrote ${OPENAPI_YAML_PATH}`);
