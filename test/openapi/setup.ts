import { afterAll, afterEach } from 'vitest';
import { answersChecked, installRecorder, takeViolations } from './recorder.js';

// Every test file (vitest setupFiles): each answer an HTTP test receives from the package must be one
// the OpenAPI document describes (see recorder.ts).
installRecorder();

function failOnViolations(): void {
  const found = takeViolations();
  if (found.length > 0) {
    throw new Error(`Answers that docs/openapi.yaml (src/management/openapi.ts) does not describe:\n${found.join('\n')}`);
  }
}

afterEach(failOnViolations);
// Answers that end after their test (a stream being settled, say) are caught here.
afterAll(() => {
  // OPENAPI_STATS=1 shows how many answers each test file had checked.
  if (process.env.OPENAPI_STATS) console.log(`OpenAPI: ${answersChecked()} answers checked`);
  failOnViolations();
});
