import { killAllChildren } from './helpers.js';

/** Root hooks: no child process outlives the run. */
export const mochaHooks = {
  async afterAll() {
    await killAllChildren();
  },
};
