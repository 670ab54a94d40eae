// Mocha appends a config's `spec` to the files named on the command line, so `mocha dist/test/x.test.js`
// would run the whole suite: the default spec applies only when no test file is named.
const named = process.argv.slice(2).some((a) => /\.test\.[cm]?js$/.test(a));
module.exports = {
  ...(named ? {} : { spec: ['dist/test/**/*.test.js'] }),
  timeout: 20000,
  exit: true,
  require: ['dist/test/hooks.js'],
  reporter: 'test/summary-reporter.cjs',
};
