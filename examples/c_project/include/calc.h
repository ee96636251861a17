/* A small calculator: the example project that vitte builds and tests. */
#ifndef CALC_H
#define CALC_H

/* Evaluates an expression of integers, + - * / and parentheses. Returns 0
 * and sets *out, or -1 and points *err at a message. */
int calc_eval(const char *expr, long *out, const char **err);

#endif
